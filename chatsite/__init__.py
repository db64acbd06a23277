# Load the Celery app with Django, so shared tasks bind to its configuration.
from chatsite.celery import app as celery_app

__all__ = ["celery_app"]
