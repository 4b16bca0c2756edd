"""The Flask-RESTful `Api`, adjusted so the whole app has one error path and one media type."""

from flask_restful import Api

from .envelope import json_response


class JsonApi(Api):
    def error_router(self, original_handler, e):
        """Hand every error to Flask's handlers (bookshelf.errors and Flask-JWT-Extended's).

        Flask-RESTful's own router answers errors raised on its routes itself, in another shape,
        and turns extension exceptions such as an expired token into 500s in production.
        """
        return original_handler(e)

    def make_response(self, data, *args, **kwargs):
        """Always JSON, whatever the Accept header asks for (no text/plain repr of a dict)."""
        kwargs.pop("fallback_mediatype", None)
        return json_response(data, *args, **kwargs)
