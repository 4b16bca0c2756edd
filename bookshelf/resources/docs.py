"""/api/v1/openapi.json, and /docs: Swagger UI served from the flask-swagger-ui package."""

from flask import Blueprint
from flask_restful import Resource
from flask_swagger_ui import get_swaggerui_blueprint

from ..openapi import Operation, build_document


class OpenAPIDocument(Resource):
    docs = {"get": Operation("This OpenAPI 3.1 document", raw=True)}

    def get(self):
        return build_document()


def docs_blueprint() -> Blueprint:
    """Swagger UI at /docs/, its assets served by the app itself: no CDN, no online validator."""
    return get_swaggerui_blueprint(
        "/docs",
        "/api/v1/openapi.json",
        config={
            "app_name": "Bookshelf API",
            "validatorUrl": None,
            "persistAuthorization": True,
            "tryItOutEnabled": True,
        },
        blueprint_name="docs",
    )
