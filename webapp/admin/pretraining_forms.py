"""Forms of the Pretraining page: start a run, and the backbone the next round uses."""

from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectChoice, SelectField
from wtforms.validators import InputRequired, NumberRange

# InceptionV3 accepts 75 px and up; 299 px is its native size (a GPU's job).
MIN_SIZE, MAX_SIZE = 75, 299
MAX_EPOCHS = 1000


class PretrainingForm(FlaskForm):
    epochs = IntegerField("Epochs (passes over the pool)", default=20,
                          validators=[InputRequired(), NumberRange(min=1, max=MAX_EPOCHS)])
    image_size = IntegerField(f"Image size in px ({MIN_SIZE}-{MAX_SIZE}; use the rounds' size)",
                              validators=[InputRequired(), NumberRange(min=MIN_SIZE, max=MAX_SIZE)])
    batch_size = IntegerField("Batch size", default=32,
                              validators=[InputRequired(), NumberRange(min=4, max=1024)])


class BackboneForm(FlaskForm):
    # "setting", "random", "imagenet" or "run-<id>" (a succeeded run of this project).
    backbone = SelectField("Backbone for the next round", choices=[])

    def fill(self, setting: str, runs) -> None:
        self.backbone.choices = [
            SelectChoice("setting", f"the installation's setting ({setting})"),
            SelectChoice("random", "random initialisation"),
            SelectChoice("imagenet", "ImageNet"),
        ] + [SelectChoice(f"run-{r.id}", f"pretraining run {r.id} ({r.image_size} px, "
                          f"{r.stats.get('epochs_done', r.epochs)} epochs)") for r in runs]
