"""The route table: every URL of the API, the resource that serves it and its endpoint name."""

from ..extensions import api
from .account_recovery import PasswordReset, PasswordResetConfirm, VerifyEmail, VerifyEmailResend
from .api_keys import ApiKeyList, ApiKeyResource
from .auth import Login, Logout, Me, Refresh, Register, SessionList, SessionResource
from .books import BookList, BookResource, UserBookList
from .changes import BookChanges
from .docs import OpenAPIDocument
from .users import UserList, UserResource

api.add_resource(Register, "/auth/register", endpoint="register")
api.add_resource(Login, "/auth/login", endpoint="login")
api.add_resource(Refresh, "/auth/refresh", endpoint="refresh")
api.add_resource(Logout, "/auth/logout", endpoint="logout")
api.add_resource(Me, "/auth/me", endpoint="me")
api.add_resource(SessionList, "/auth/sessions", endpoint="sessions")
api.add_resource(SessionResource, "/auth/sessions/<session_id>", endpoint="session")
api.add_resource(VerifyEmail, "/auth/verify-email", endpoint="verify_email")
api.add_resource(VerifyEmailResend, "/auth/verify-email/resend", endpoint="verify_email_resend")
api.add_resource(PasswordReset, "/auth/password-reset", endpoint="password_reset")
api.add_resource(
    PasswordResetConfirm, "/auth/password-reset/confirm", endpoint="password_reset_confirm"
)
api.add_resource(ApiKeyList, "/auth/api-keys", endpoint="api_keys")
api.add_resource(ApiKeyResource, "/auth/api-keys/<id:key_id>", endpoint="api_key")
api.add_resource(UserList, "/users", endpoint="users")
api.add_resource(UserResource, "/users/<id:user_id>", endpoint="user")
api.add_resource(UserBookList, "/users/<id:user_id>/books", endpoint="user_books")
api.add_resource(BookList, "/books", endpoint="books")
api.add_resource(BookChanges, "/books/changes", endpoint="book_changes")
api.add_resource(BookResource, "/books/<id:book_id>", endpoint="book")
api.add_resource(OpenAPIDocument, "/openapi.json", endpoint="openapi")
