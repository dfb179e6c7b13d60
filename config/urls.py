from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from campaigns.api import ComposeView, DoubleOptInView, InboundView, WebFormViewSet
from campaigns.api_campaigns import CampaignViewSet
from consents.api import ConsentPurposeViewSet, PersonConsentsView, ProofView
from crm.api import ImportJobViewSet, PersonViewSet
from crm.api_composed import ExplainView, SettingsView
from crm.api_lists import MarketingListViewSet

router = DefaultRouter()
router.register("persons", PersonViewSet, basename="person")
router.register("imports", ImportJobViewSet, basename="import")
router.register("consent-purposes", ConsentPurposeViewSet, basename="consent-purpose")
router.register("web-forms", WebFormViewSet, basename="web-form-api")
router.register("campaigns", CampaignViewSet, basename="campaign")
router.register("marketing-lists", MarketingListViewSet, basename="marketing-list")

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("api/persons/<uuid:pk>/consents/", PersonConsentsView.as_view(),
         name="person-consents"),
    path("api/persons/<uuid:pk>/consents/<slug:purpose>/proof/", ProofView.as_view(),
         name="person-consent-proof"),
    path("api/persons/<uuid:pk>/explain/", ExplainView.as_view(), name="person-explain"),
    path("api/settings/", SettingsView.as_view(), name="settings"),
    path("api/persons/<uuid:pk>/double-opt-in/", DoubleOptInView.as_view(),
         name="person-double-opt-in"),
    path("api/persons/<uuid:pk>/emails/", ComposeView.as_view(), name="person-emails"),
    path("api/persons/<uuid:pk>/inbound/", InboundView.as_view(), name="person-inbound"),
    path("api/", include("preferences_portal.api")),  # portal-invite, repermission, runs
    path("api/", include(router.urls)),
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("preferences_portal.urls")),
    path("", include("campaigns.urls")),
]
