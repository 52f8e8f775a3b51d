"""Forms of the admin's project and people pages."""

from flask_wtf import FlaskForm
from wtforms import BooleanField, FloatField, IntegerField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from models import Role
from models.feature_sources import DEFAULT_FEATURE_SOURCES
from models.strategies import DEFAULT_STRATEGY
from models.presets import PRESETS

from .active_learning_forms import CHOICES as STRATEGIES
from .forms import FEATURE_SOURCE_CHOICES

ROLE_CHOICES = [SelectChoice(r.value, r.value) for r in Role]
PRESET_CHOICES = ([SelectChoice(name, f"{name}: " + ", ".join(c[0] for c in classes))
                   for name, classes in PRESETS.items()]
                  + [SelectChoice("custom", "custom classes (below)")])
# Empty class rows the new-project form offers (rows left empty are ignored).
CLASS_ROWS = 12
# Distinct starting colours for those rows (ColorBrewer's "Paired").
ROW_COLOURS = ["#1f78b4", "#e31a1c", "#33a02c", "#ff7f00", "#6a3d9a", "#b15928", "#a6cee3",
               "#fb9a99", "#b2df8a", "#fdbf6f", "#cab2d6", "#ffff99"]


class NewProjectForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    preset = SelectField("Classes", choices=PRESET_CHOICES, default="pbc8")
    readers_per_cell = IntegerField("Readers per cell, k", default=1,
                                    validators=[NumberRange(min=1, max=20)])
    blind_reading = BooleanField("Blind reading: hide the model's suggestions from readers")
    test_share = FloatField("Share of imported cells held out as the test split", default=0.1,
                            validators=[NumberRange(min=0, max=0.9)])
    al_strategy = SelectField("Strategy for review rounds", choices=STRATEGIES,
                              default=DEFAULT_STRATEGY)
    al_round_size = IntegerField("Round size B", default=50,
                                 validators=[NumberRange(min=1, max=100_000)])
    feature_sources = SelectField("What the classifier reads", choices=FEATURE_SOURCE_CHOICES,
                                  default=DEFAULT_FEATURE_SOURCES)


class NewClassForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=60)])
    hotkey = StringField("Hotkey", validators=[DataRequired(), Length(min=1, max=1)])
    colour = StringField("Colour", default="#888888", validators=[DataRequired()])


class NewUserForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=80)])
    role = SelectField("Role", choices=ROLE_CHOICES, default="pathologist")


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=ROLE_CHOICES)


class MemberForm(FlaskForm):
    user_id = SelectField("Reader", coerce=int, validate_choice=False, validators=[Optional()])


class ImportForm(FlaskForm):
    trust_labels = BooleanField("Class-folder names are correct labels: train on them")
