"""Asset versions get `meta`: facts about how a version was made (timings, hosts) kept out of its digest.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("asset_versions") as batch:
        batch.add_column(sa.Column("meta", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("asset_versions") as batch:
        batch.drop_column("meta")
