from django.urls import path

from . import views, views_tracking

urlpatterns = [
    path("forms/<slug:slug>/", views.web_form, name="web-form"),
    path("t/o/<str:token>/", views_tracking.open_pixel, name="tracking-open"),
    path("t/c/<str:token>/", views_tracking.click, name="tracking-click"),
]
