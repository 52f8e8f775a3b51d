from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length


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
