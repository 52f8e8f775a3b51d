from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    FloatField,
    IntegerField,
    SelectField,
    SelectMultipleField,
    widgets,
)
from wtforms.validators import NumberRange, Optional

from models.feature_sources import FEATURE_SOURCES, LABELS

FEATURE_SOURCE_CHOICES = [(name, LABELS[name]) for name in FEATURE_SOURCES]


class ProjectSettingsForm(FlaskForm):
    retrain_after_new_labels = IntegerField(
        "Start a round automatically after this many new labels (empty: only by hand)",
        validators=[Optional(), NumberRange(min=1, max=1_000_000)])
    min_labels_per_class = IntegerField(
        "Labels a class needs before it is trained", validators=[NumberRange(min=1, max=10_000)])
    fine_tune_blocks = IntegerField(
        "InceptionV3 blocks to fine-tune after the head (0: head only; 2 is a good start on a GPU)",
        validators=[NumberRange(min=0, max=11)])
    feature_sources = SelectField(
        "What the classifier reads (a change takes effect at the next round, which then "
        "starts afresh instead of from the active model)", choices=FEATURE_SOURCE_CHOICES)
    warm_start = BooleanField("Start each round from the active model")
    train_on_reference = BooleanField("Train on reference labels that came with imports")
    # Issue 15: nucleus areas in µm² on the curators' measurements panel.
    microns_per_pixel = FloatField(
        "Scanner pixel size in µm (empty: areas in pixels), e.g. 0.24",
        validators=[Optional(), NumberRange(min=0.001, max=100)])


class ReadingSettingsForm(FlaskForm):
    """How cells are read: k readers, contested classes, agreement sample, blind, leases."""

    readers_per_cell = IntegerField(
        "Readers per cell, k: 1 gives each cell to one reader (no overlap); with k > 1, "
        "k readers read it and its label is final when they agree",
        validators=[NumberRange(min=1, max=20)])
    contested_readers = IntegerField(
        "Higher k for contested classes and the agreement sample (empty: none)",
        validators=[Optional(), NumberRange(min=1, max=20)])
    # Checkboxes, not a <select multiple>: a multi-select is a few rows high and
    # needs Ctrl-click, which readers of this page kept getting wrong.
    contested_classes = SelectMultipleField(
        "Contested classes (readers often disagree)", coerce=int,
        option_widget=widgets.CheckboxInput(), widget=widgets.ListWidget(prefix_label=False))
    agreement_share = FloatField(
        "Share of cells read with the higher k to measure agreement (0 to 1)",
        validators=[NumberRange(min=0, max=1)])
    blind_reading = BooleanField("Blind reading: hide the model's suggestions from readers")
    lease_minutes = IntegerField(
        "Minutes a cell shown to a reader stays theirs", validators=[NumberRange(min=1, max=24 * 60)])
    suggestion_min_accuracy = FloatField(
        "Show the model's suggestions as tentative while its test accuracy is below this "
        "(0 to 1; also while it is uncalibrated)",
        validators=[Optional(), NumberRange(min=0, max=1)])
