from django.urls import path

from . import views

urlpatterns = [path("forms/<slug:slug>/", views.web_form, name="web-form")]
