"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: Union[str, None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('projects',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('description', sa.String(length=2000), nullable=False),
    sa.Column('test_share', sa.Double(), nullable=False),
    sa.Column('train_on_reference', sa.Boolean(), nullable=False),
    sa.Column('min_labels_per_class', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('min_labels_per_class >= 1', name=op.f('ck_projects_min_labels_positive')),
    sa.CheckConstraint('test_share >= 0 AND test_share < 1', name=op.f('ck_projects_test_share_range')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_projects')),
    sa.UniqueConstraint('name', name=op.f('uq_projects_name'))
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=80), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('role', sa.Enum('pathologist', 'curator', 'admin', name='user_role', native_enum=False, length=20), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('images',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('storage_path', sa.String(length=500), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('original_name', sa.String(length=500), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=False),
    sa.Column('split', sa.Enum('pool', 'test', name='image_split', native_enum=False, length=10), nullable=False),
    sa.Column('shuffle_key', sa.Double(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_images_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_images')),
    sa.UniqueConstraint('project_id', 'sha256', name=op.f('uq_images_project_id_sha256'))
    )
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.create_index('ix_images_queue', ['project_id', 'split', 'shuffle_key'], unique=False)

    op.create_table('label_classes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=60), nullable=False),
    sa.Column('hotkey', sa.String(length=1), nullable=False),
    sa.Column('colour', sa.String(length=7), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_label_classes_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_label_classes')),
    sa.UniqueConstraint('project_id', 'hotkey', name=op.f('uq_label_classes_project_id_hotkey')),
    sa.UniqueConstraint('project_id', 'name', name=op.f('uq_label_classes_project_id_name')),
    sa.UniqueConstraint('project_id', 'position', name=op.f('uq_label_classes_project_id_position'))
    )
    op.create_table('training_rounds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Enum('queued', 'running', 'succeeded', 'failed', 'cancelled', name='round_status', native_enum=False, length=12), nullable=False),
    sa.Column('progress', sa.Double(), nullable=False),
    sa.Column('phase', sa.String(length=200), nullable=False),
    sa.Column('trigger', sa.String(length=20), nullable=False),
    sa.Column('triggered_by_id', sa.Integer(), nullable=True),
    sa.Column('celery_task_id', sa.String(length=64), nullable=True),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('warnings', sa.JSON(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('timings', sa.JSON(), nullable=False),
    sa.Column('n_train', sa.Integer(), nullable=True),
    sa.Column('n_test', sa.Integer(), nullable=True),
    sa.Column('n_scored', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_training_rounds_project_id_projects'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['triggered_by_id'], ['users.id'], name=op.f('fk_training_rounds_triggered_by_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_rounds'))
    )
    with op.batch_alter_table('training_rounds', schema=None) as batch_op:
        batch_op.create_index('ix_training_rounds_project_status', ['project_id', 'status'], unique=False)

    op.create_table('model_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('round_id', sa.Integer(), nullable=False),
    sa.Column('artifact_path', sa.String(length=500), nullable=False),
    sa.Column('class_ids', sa.JSON(), nullable=False),
    sa.Column('input_size', sa.Integer(), nullable=False),
    sa.Column('backbone_weights', sa.String(length=500), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_model_versions_project_id_projects'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['round_id'], ['training_rounds.id'], name=op.f('fk_model_versions_round_id_training_rounds')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('round_id', name=op.f('uq_model_versions_round_id'))
    )
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.create_index('ix_model_versions_project_active', ['project_id', 'is_active'], unique=False)

    op.create_table('annotations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('origin', sa.Enum('reader', 'reference', name='annotation_origin', native_enum=False, length=10), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=True),
    sa.Column('label_class_id', sa.Integer(), nullable=True),
    sa.Column('flag', sa.Enum('ambiguous', 'unusable', name='annotation_flag', native_enum=False, length=10), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=True),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('suggested_class_id', sa.Integer(), nullable=True),
    sa.Column('submission_id', sa.String(length=64), nullable=True),
    sa.CheckConstraint('(label_class_id IS NULL) <> (flag IS NULL)', name=op.f('ck_annotations_class_xor_flag')),
    sa.CheckConstraint('duration_ms IS NULL OR duration_ms >= 0', name=op.f('ck_annotations_duration_positive')),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_annotations_image_id_images'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['label_class_id'], ['label_classes.id'], name=op.f('fk_annotations_label_class_id_label_classes')),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_annotations_model_version_id_model_versions')),
    sa.ForeignKeyConstraint(['suggested_class_id'], ['label_classes.id'], name=op.f('fk_annotations_suggested_class_id_label_classes')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_annotations_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_annotations')),
    sa.UniqueConstraint('user_id', 'submission_id', name=op.f('uq_annotations_user_id_submission_id'))
    )
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.create_index('ix_annotations_image_created', ['image_id', 'created_at'], unique=False)

    op.create_table('predictions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('probabilities', sa.JSON(), nullable=False),
    sa.Column('predicted_class_id', sa.Integer(), nullable=False),
    sa.Column('confidence', sa.Double(), nullable=False),
    sa.Column('entropy', sa.Double(), nullable=False),
    sa.Column('margin', sa.Double(), nullable=False),
    sa.Column('least_confidence', sa.Double(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['image_id'], ['images.id'], name=op.f('fk_predictions_image_id_images'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], name=op.f('fk_predictions_model_version_id_model_versions'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['predicted_class_id'], ['label_classes.id'], name=op.f('fk_predictions_predicted_class_id_label_classes')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_predictions')),
    sa.UniqueConstraint('model_version_id', 'image_id', name=op.f('uq_predictions_model_version_id_image_id'))
    )
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.create_index('ix_predictions_version_entropy', ['model_version_id', 'entropy'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_index('ix_predictions_version_entropy')

    op.drop_table('predictions')
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.drop_index('ix_annotations_image_created')

    op.drop_table('annotations')
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_index('ix_model_versions_project_active')

    op.drop_table('model_versions')
    with op.batch_alter_table('training_rounds', schema=None) as batch_op:
        batch_op.drop_index('ix_training_rounds_project_status')

    op.drop_table('training_rounds')
    op.drop_table('label_classes')
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index('ix_images_queue')

    op.drop_table('images')
    op.drop_table('users')
    op.drop_table('projects')
