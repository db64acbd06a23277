from __future__ import annotations

from django.contrib.auth import authenticate, login
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from accounts.services import token_issue, user_signup
from chatsite.api import api_view, json_response, parse_json_body
from messaging.errors import BadRequest, ChatError, NotAuthenticated


def _credentials(request: HttpRequest) -> tuple[str, str]:
    data = parse_json_body(request)
    username, password = data.get("username"), data.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise BadRequest("username and password are required strings")
    return username, password


def _user_payload(user: User) -> dict[str, object]:
    return {"id": user.pk, "username": user.username}


@api_view(methods={"POST"}, auth=False)
def api_signup(request: HttpRequest) -> HttpResponse:
    username, password = _credentials(request)
    user = user_signup(username=username, password=password)
    return json_response({"token": token_issue(user=user), "user": _user_payload(user)}, status=201)


@api_view(methods={"POST"}, auth=False)
def api_token(request: HttpRequest) -> HttpResponse:
    username, password = _credentials(request)
    user = authenticate(request, username=username, password=password)
    if not isinstance(user, User):
        raise NotAuthenticated("wrong username or password")
    return json_response({"token": token_issue(user=user), "user": _user_payload(user)})


@require_http_methods(["GET", "POST"])
def signup_page(request: HttpRequest) -> HttpResponse:
    error = None
    username = ""
    if request.method == "POST":
        username = request.POST.get("username", "")
        password = request.POST.get("password", "")
        if password != request.POST.get("password_again", ""):
            error = "The two passwords differ."
        else:
            try:
                user = user_signup(username=username, password=password)
            except ChatError as exc:
                error = exc.message
            else:
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
                return redirect("chat-list")
    return render(request, "accounts/signup.html", {"error": error, "username": username}, status=400 if error else 200)
