"""Forms of the active-learning page: the project's strategy, and a comparison run."""

from flask_wtf import FlaskForm
from wtforms import (DecimalField, IntegerField, SelectChoice, SelectField, SelectMultipleField,
                     widgets)
from wtforms.validators import NumberRange, ValidationError

from models.strategies import STRATEGY_NAMES

CHOICES = [SelectChoice(name, name.replace("_", " ")) for name in STRATEGY_NAMES]


class StrategyForm(FlaskForm):
    al_strategy = SelectField("Strategy for review rounds", choices=CHOICES)
    al_round_size = IntegerField("Round size B (cells per review round)",
                                 validators=[NumberRange(min=1, max=100_000)])
    review_random_share = DecimalField(
        "Share of each round drawn at random (keeps accuracy estimates unbiased)",
        places=2, validators=[NumberRange(min=0, max=0.5)])


def at_least_one(form, field) -> None:
    """Checked on the server only: DataRequired would put ``required`` on every
    checkbox, and a browser then refuses the form unless all of them are ticked."""
    if not field.data:
        raise ValidationError("Choose at least one strategy.")


class ComparisonForm(FlaskForm):
    strategies = SelectMultipleField(
        "Strategies to compare", choices=CHOICES, default=["random", "margin"],
        option_widget=widgets.CheckboxInput(), widget=widgets.ListWidget(prefix_label=False),
        validators=[at_least_one])
    initial = IntegerField("Initial labels", default=20, validators=[NumberRange(min=1)])
    batch = IntegerField("Round size", default=20, validators=[NumberRange(min=1)])
    rounds = IntegerField("Rounds", default=10, validators=[NumberRange(min=1, max=200)])
    repeats = IntegerField("Repeats", default=3, validators=[NumberRange(min=1, max=20)])
