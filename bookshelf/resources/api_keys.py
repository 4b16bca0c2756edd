"""/auth/api-keys: the caller's API keys, for services (bookshelf.auth.api_keys)."""

from flask import url_for
from flask_jwt_extended import current_user, jwt_required
from flask_restful import Resource, marshal
from flask_restful.reqparse import Argument

from .. import validation as v
from ..auth.permissions import verified_email_required
from ..http import created, item, no_content, page
from ..models import ApiKey
from ..models.api_key import SCOPES
from ..openapi import Operation
from ..services import api_keys
from .fields import API_KEY_FIELDS, NEW_API_KEY_FIELDS
from .pagination import page_arguments

create_parser = v.json_parser(
    Argument("name", type=v.text(1, 100), required=True, nullable=False),
    Argument("scopes", type=v.choices(*SCOPES), required=True, nullable=False),
    Argument(
        "expires_in_days",
        type=v.integer(1, api_keys.MAX_DAYS),
        required=True,
        nullable=False,
    ),
)
list_parser = v.query_parser(*page_arguments())
KEYS_ONLY_BY_LOGIN = (
    " Only with a login's access token: an API key cannot manage keys (403 INSUFFICIENT_SCOPE)."
)


class ApiKeyList(Resource):
    method_decorators = {
        "get": [jwt_required()],
        "post": [verified_email_required, jwt_required()],  # the last runs first
    }
    docs = {
        "get": Operation(
            "The caller's API keys (never the keys themselves)",
            auth="access",
            query=list_parser,
            output=API_KEY_FIELDS,
            model=ApiKey,
            many=True,
            description="Unrevoked keys, expired ones included, the newest first."
            + KEYS_ONLY_BY_LOGIN,
        ),
        "post": Operation(
            "Create an API key for a service: the key is in this answer only",
            auth="access",
            body=create_parser,
            status=201,
            output=NEW_API_KEY_FIELDS,
            model=ApiKey,
            schema_name="NewApiKey",
            location=True,
            errors=(409,),
            description="Scopes: `books:read` (read the catalog), `books:write` (add, change "
            "and delete the owner's books), `profile:read` (GET /auth/me and the owner's own "
            "user). `expires_in_days` is required, 1 to 365. Keep the key secret: only its "
            "hash is stored, and it cannot be shown again. 409 past 100 live keys."
            + KEYS_ONLY_BY_LOGIN,
        ),
    }

    def get(self):
        query = v.parse_query(list_parser)
        rows, total = api_keys.list_keys(current_user, **query)
        return page(marshal(rows, API_KEY_FIELDS), total=total, **query)

    def post(self):
        row, key = api_keys.create_key(current_user, **v.parse_body(create_parser))
        body = marshal(row, API_KEY_FIELDS) | {"key": key}
        return created(body, url_for("api_key", key_id=row.id))


class ApiKeyResource(Resource):
    method_decorators = [jwt_required()]
    docs = {
        "get": Operation(
            "One of the caller's API keys (never the key itself)",
            auth="access",
            output=API_KEY_FIELDS,
            model=ApiKey,
            errors=(404,),
            description=KEYS_ONLY_BY_LOGIN.strip(),
        ),
        "delete": Operation(
            "Revoke one of the caller's API keys: it is refused from now on",
            auth="access",
            status=204,
            errors=(404,),
            description="404 for a key that is not the caller's, or is revoked already."
            + KEYS_ONLY_BY_LOGIN,
        ),
    }

    def get(self, key_id):
        return item(marshal(api_keys.get_key(current_user, key_id), API_KEY_FIELDS))

    def delete(self, key_id):
        api_keys.revoke_key(current_user, key_id)
        return no_content()
