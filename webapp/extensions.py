"""Flask extensions, created unbound and initialised in create_app."""

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf import CSRFProtect

csrf = CSRFProtect()
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to continue."
login_manager.login_message_category = "info"
# No default limits: only the login form is limited (webapp/auth/throttle.py).
limiter = Limiter(key_func=get_remote_address, default_limits=[])
