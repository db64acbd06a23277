from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views as account_views
from messaging import views as messaging_views
from presence import views as presence_views

urlpatterns = [
    path("api/auth/signup", account_views.api_signup),
    path("api/auth/token", account_views.api_token),
    path("api/servers/assign", presence_views.api_assign_server),
    path("api/chats", messaging_views.api_chats),
    path("api/chats/<int:chat_id>/messages", messaging_views.api_chat_messages),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(template_name="accounts/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("signup/", account_views.signup_page, name="signup"),
    path("", messaging_views.chat_list_page, name="chat-list"),
    path("chats/<int:chat_id>/", messaging_views.chat_page, name="chat"),
]
