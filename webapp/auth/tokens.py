"""A person's own API tokens on the Account page (list, create — shown once —, revoke).

The page itself (with the password form) is auth.account in routes.py."""

from __future__ import annotations

from datetime import timedelta

from flask import flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from sqlalchemy import select, update

from models import ApiToken, Role, Scope, utcnow
from models.tokens import SCOPE_ROLE

from ..db import get_db
from . import bp
from .forms import ChangePasswordForm, TokenForm

MAX_TOKENS = 50  # live tokens per account: plenty for scripts, not a table to fill


def _tokens() -> list[ApiToken]:
    return list(get_db().scalars(select(ApiToken).where(ApiToken.user_id == current_user.id)
                                 .order_by(ApiToken.id.desc())))


def account_page(password_form: ChangePasswordForm | None = None,
                 token_form: TokenForm | None = None, new_token: str | None = None,
                 status: int = 200):
    """The Account page (auth.account): the password form and the API tokens."""
    return render_template(
        "auth/account.html", form=password_form or ChangePasswordForm(formdata=None),
        token_form=token_form or TokenForm(formdata=None), tokens=_tokens(), now=utcnow(),
        new_token=new_token, is_admin=current_user.has_role(Role.ADMIN)), status


def _page(form: TokenForm, new_token: str | None = None, status: int = 200):
    return account_page(token_form=form, new_token=new_token, status=status)


@bp.post("/account/tokens")
@login_required
def create_token():
    form = TokenForm()
    if not form.validate_on_submit():
        return _page(form, status=400)
    scopes = [Scope(s) for s in form.scopes.data]
    refused = [s for s in scopes if not current_user.has_role(SCOPE_ROLE[s])]
    if refused:
        form.scopes.errors = [f"The {s.value} scope is for {SCOPE_ROLE[s].value}s." for s in refused]
        return _page(form, status=403)
    db = get_db()
    now = utcnow()
    live = [t for t in _tokens() if t.usable(now)]
    if len(live) >= MAX_TOKENS:
        form.name.errors = [f"You have {len(live)} live tokens; revoke some first."]
        return _page(form, status=409)
    expires = None if form.expires.data == "never" else now + timedelta(days=int(form.expires.data))
    row, token = ApiToken.issue(current_user, form.name.data.strip(), scopes, expires)
    db.add(row)
    db.commit()
    # Rendered, not redirected: the token is in this one response only (never in
    # the session cookie or a later page).
    response, status = _page(TokenForm(formdata=None), new_token=token, status=201)
    return response, status, {"Cache-Control": "no-store"}


@bp.post("/account/tokens/<int:token_id>/revoke")
@login_required
def revoke_token(token_id: int):
    db = get_db()
    # Only one's own tokens: someone else's id changes nothing (and says so alike).
    done = db.execute(update(ApiToken).where(
        ApiToken.id == token_id, ApiToken.user_id == current_user.id,
        ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow())).rowcount
    db.commit()
    if done:
        flash("Token revoked: programs using it are refused from now on.", "info")
    else:
        flash("No such live token of yours; nothing changed.", "error")
    return redirect(url_for("auth.account"))
