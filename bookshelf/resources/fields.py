"""Output field definitions (Flask-RESTful `fields`), shared by the resources."""

from flask_restful import fields


class UTCDateTime(fields.Raw):
    """ISO 8601 in UTC with a `Z`, from the naive UTC datetimes the models store."""

    def format(self, value):
        return value.isoformat(timespec="microseconds") + "Z"


# Field instances, not classes: `marshal` would build a new instance of a class per field per call.
USER_FIELDS = {
    "id": fields.Integer(),
    "name": fields.String(),
    "email": fields.String(),
    "role": fields.String(),
    "created_at": UTCDateTime(),
    "updated_at": UTCDateTime(),
}

BOOK_FIELDS = {
    "id": fields.Integer(),
    "title": fields.String(),
    "author": fields.String(),
    "genre": fields.String(),
    "published_year": fields.Integer(default=None),
    "isbn": fields.String(),
    "owner_id": fields.Integer(),
    "created_at": UTCDateTime(),
    "updated_at": UTCDateTime(),
}
