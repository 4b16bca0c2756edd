"""/api/v1/openapi.json, and /docs: Swagger UI served from the flask-swagger-ui package.

Both only with DOCS_ENABLED (on by default in development and testing, off in production); off,
they are 404 like any unknown URL.
"""

from flask import Blueprint, Flask, request
from flask_restful import Resource
from flask_swagger_ui import get_swaggerui_blueprint
from werkzeug.exceptions import NotFound

from ..openapi import Operation, build_document

DOCUMENT_PATH = "/api/v1/openapi.json"


class OpenAPIDocument(Resource):
    docs = {"get": Operation("This OpenAPI 3.1 document", raw=True)}

    def get(self):
        return build_document()


def init_docs(app: Flask) -> None:
    """Serve /docs/ when DOCS_ENABLED; otherwise hide the document as well, whatever the method
    (its route is in the route table, which every app shares)."""
    if app.config["DOCS_ENABLED"]:
        app.register_blueprint(docs_blueprint())
        return

    @app.before_request
    def hide_document() -> None:
        if request.path == DOCUMENT_PATH:
            raise NotFound()


def docs_blueprint() -> Blueprint:
    """Swagger UI at /docs/, its assets served by the app itself: no CDN, no online validator.
    A token pasted into "Authorize" lives as long as the page: it is not kept in the browser's
    storage, where any script of the origin, or the next user of the machine, could read it."""
    return get_swaggerui_blueprint(
        "/docs",
        DOCUMENT_PATH,
        config={
            "app_name": "Bookshelf API",
            "validatorUrl": None,
            "persistAuthorization": False,
            "tryItOutEnabled": True,
        },
        blueprint_name="docs",
    )
