from __future__ import annotations

from asgiref.sync import async_to_sync
from django.http import HttpRequest, HttpResponse

from chatsite.api import api_view, json_response
from messaging.errors import Unavailable
from presence.backends import server_directory


@api_view(methods={"GET"})
def api_assign_server(request: HttpRequest) -> HttpResponse:
    ws_url = async_to_sync(server_directory().assign)(request_host=request.get_host(), secure=request.is_secure())
    if ws_url is None:
        raise Unavailable("no chat server is live; retry shortly")
    return json_response({"ws_url": ws_url})
