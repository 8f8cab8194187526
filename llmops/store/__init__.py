"""The store: SQLAlchemy tables, Alembic migrations, runs, the asset registry, lineage and run search."""
