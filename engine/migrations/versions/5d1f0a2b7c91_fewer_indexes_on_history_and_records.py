"""fewer indexes on history and records

Every action appends an event and most keep a record; each index of those tables is one more page
written at commit. event.chain is the first column of the unique (chain, seq) index already; the
record's kind and public indexes become one (kind, public), which the public pages query.

Revision ID: 5d1f0a2b7c91
Revises: 839ce8341bef
Create Date: 2026-11-30 09:10:00

"""
from typing import Sequence, Union

from alembic import op


revision: str = '5d1f0a2b7c91'
down_revision: Union[str, Sequence[str], None] = '839ce8341bef'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_event_chain'))
    with op.batch_alter_table('record', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_record_kind'))
        batch_op.drop_index(batch_op.f('ix_record_public'))
        batch_op.create_index('ix_record_kind_public', ['kind', 'public'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('record', schema=None) as batch_op:
        batch_op.drop_index('ix_record_kind_public')
        batch_op.create_index(batch_op.f('ix_record_public'), ['public'], unique=False)
        batch_op.create_index(batch_op.f('ix_record_kind'), ['kind'], unique=False)
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_event_chain'), ['chain'], unique=False)
