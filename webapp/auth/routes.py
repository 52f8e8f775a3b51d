from __future__ import annotations

from urllib.parse import urlsplit

from flask import flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select, update

from models import User
from models.users import verify_login

from ..db import get_db
from ..extensions import login_manager
from . import bp, sessions
from .forms import ChangePasswordForm, LoginForm
from .throttle import limit_failed_logins
from .tokens import account_page


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    user = get_db().get(User, int(user_id)) if user_id.isdigit() else None
    if user is None or not user.is_active or not sessions.still_valid(user):
        # Ended on the server (logout elsewhere, new password, deactivated) or
        # idle too long: forget it, so the login page starts clean.
        session.clear()
        return None
    return user


def _safe_next(target: str | None) -> str | None:
    # Only same-site paths: never redirect a login to another host.
    if not target:
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc and target.startswith("/") else None


@bp.route("/login", methods=["GET", "POST"])
@limit_failed_logins
def login():
    if current_user.is_authenticated:
        return redirect(url_for("index"))
    form = LoginForm()
    if form.validate_on_submit():
        user = get_db().scalar(select(User).where(User.username == form.username.data.strip()))
        # One hash check whether or not the account exists (models/users.py).
        if not verify_login(user, form.password.data):
            flash("Unknown username or wrong password.", "error")
            return render_template("auth/login.html", form=form), 401
        # A login starts a clean session: no reading counters, skips or undo
        # history of whoever used this browser before.
        session.clear()
        login_user(user)
        sessions.start(user)
        return redirect(_safe_next(request.args.get("next")) or url_for("index"))
    return render_template("auth/login.html", form=form)


@bp.post("/logout")
@login_required
def logout():
    # Ends this account's sessions on the server: a copy of this cookie (or
    # another browser of the same account) is refused from now on.
    db = get_db()
    db.execute(update(User).where(User.id == current_user.id)
               .values(session_version=User.session_version + 1))
    db.commit()
    logout_user()
    session.clear()  # the reader's counters, skips and undo history go with them
    flash("Logged out.", "info")
    return redirect(url_for("auth.login"))


# Where a user whose password an admin reset may go before choosing their own.
PASSWORD_CHANGE_ENDPOINTS = {"auth.account", "auth.logout", "static"}


@bp.before_app_request
def _password_change_first():
    """After an admin's reset, every page leads to the account page until the
    one-time password is replaced (API calls get 403 with the reason).  A URL no
    route matches is left to its 404 (which must render even with the database
    down, so the user is not loaded for it)."""
    # Asked before the user is loaded: a static file or one of the allowed
    # pages costs no database query.
    if request.endpoint is None or request.endpoint in PASSWORD_CHANGE_ENDPOINTS:
        return None
    if current_user.is_authenticated and current_user.must_change_password:
        if request.path.startswith("/api/"):
            return {"error": "change your one-time password first (/auth/account)"}, 403
        if request.headers.get("HX-Request"):
            return "", 204, {"HX-Redirect": url_for("auth.account")}
        return redirect(url_for("auth.account"))
    return None


@bp.route("/account", methods=["GET", "POST"])
@login_required
def account():
    """Everyone changes their own password here."""
    form = ChangePasswordForm()
    if form.validate_on_submit():
        user = current_user._get_current_object()
        if not user.check_password(form.current.data):
            form.current.errors.append("That is not your current password.")
            return account_page(form, status=400)
        if form.new.data == form.current.data:
            form.new.errors.append("Choose a password other than the current one.")
            return account_page(form, status=400)
        user.set_password(form.new.data)  # ends this account's other sessions
        user.must_change_password = False
        get_db().commit()
        sessions.start(user)  # this browser's session carries the new version
        flash("Your password has been changed; your other sessions have ended.", "info")
        return redirect(url_for("auth.account"))
    return account_page(form, status=400 if request.method == "POST" else 200)
