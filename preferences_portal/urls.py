from django.urls import path

from . import views

urlpatterns = [
    path("confirm/<str:token>/", views.double_opt_in, name="double-opt-in-confirm"),
    path("u/<str:token>/", views.one_click_unsubscribe, name="one-click-unsubscribe"),
    path("p/<str:token>/", views.preference_page, name="preference-page"),
    path("confirm-change/<str:token>/", views.confirm_change, name="portal-confirm-change"),
    path("confirm-change/<str:token>/my-data.<str:fmt>", views.download_data,
         name="portal-download"),
]
