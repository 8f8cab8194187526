"""A version may repeat an earlier version's content (a revert), so (kind, name, digest) is no longer unique;
`same_as` records the earliest version it equals.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("asset_versions") as batch:
        batch.drop_constraint("uq_asset_digest", type_="unique")
        batch.add_column(sa.Column("same_as", sa.Integer, nullable=True))
        batch.create_index("ix_asset_digest", ["kind", "name", "digest"])


def downgrade() -> None:
    with op.batch_alter_table("asset_versions") as batch:
        batch.drop_index("ix_asset_digest")
        batch.drop_column("same_as")
        batch.create_unique_constraint("uq_asset_digest", ["kind", "name", "digest"])
