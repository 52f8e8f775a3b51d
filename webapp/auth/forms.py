from flask_wtf import FlaskForm
from wtforms import PasswordField, SelectChoice, SelectField, SelectMultipleField, StringField
from wtforms.validators import DataRequired, EqualTo, Length
from wtforms.widgets import CheckboxInput, ListWidget


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=80)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


class ChangePasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=200)])
    new = PasswordField("New password (8 characters or more)",
                        validators=[DataRequired(), Length(min=8, max=200)])
    again = PasswordField("New password again",
                          validators=[DataRequired(), EqualTo("new", message="The two new "
                                                              "passwords differ.")])


class TokenForm(FlaskForm):
    """A new personal access token (webapp/auth/tokens.py)."""

    name = StringField("Name", validators=[DataRequired(), Length(max=80)],
                       description="What the token is for, e.g. 'export script on lab-pc'.")
    scopes = SelectMultipleField(
        "Scopes", choices=[SelectChoice("read", "read: projects, cells, annotations"),
                           SelectChoice("label", "label: lease cells and record labels as you"),
                           SelectChoice("admin", "admin: rounds and model versions (admins)")],
        default=["read"], validators=[DataRequired(message="Choose at least one scope.")],
        option_widget=CheckboxInput(), widget=ListWidget(prefix_label=False))
    expires = SelectField(
        "Expires", choices=[SelectChoice("30", "in 30 days"), SelectChoice("90", "in 90 days"),
                            SelectChoice("365", "in a year"), SelectChoice("never", "never")],
        default="90")
