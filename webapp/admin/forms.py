from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField
from wtforms.validators import NumberRange, Optional


class ProjectSettingsForm(FlaskForm):
    retrain_after_new_labels = IntegerField(
        "Start a round automatically after this many new labels (empty: only by hand)",
        validators=[Optional(), NumberRange(min=1, max=1_000_000)])
    min_labels_per_class = IntegerField(
        "Labels a class needs before it is trained", validators=[NumberRange(min=1, max=10_000)])
    fine_tune_blocks = IntegerField(
        "InceptionV3 blocks to fine-tune after the head (0: head only; 2 is a good start on a GPU)",
        validators=[NumberRange(min=0, max=11)])
    warm_start = BooleanField("Start each round from the active model")
    train_on_reference = BooleanField("Train on reference labels that came with imports")
