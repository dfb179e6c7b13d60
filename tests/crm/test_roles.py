import pytest
from django.contrib.auth.models import Group, Permission

from crm.roles import ADMINS, STAFF, STAFF_PERMISSIONS, sync_roles

pytestmark = pytest.mark.django_db


def perms(group):
    return {f"{p.content_type.app_label}.{p.codename}"
            for p in group.permissions.select_related("content_type")}


def test_migrations_create_both_roles():
    assert set(Group.objects.values_list("name", flat=True)) >= {ADMINS, STAFF}


def test_admins_hold_every_permission_and_staff_exactly_the_people_work():
    assert perms(Group.objects.get(name=ADMINS)) == {
        f"{p.content_type.app_label}.{p.codename}"
        for p in Permission.objects.select_related("content_type")
    }
    assert perms(Group.objects.get(name=STAFF)) == STAFF_PERMISSIONS


@pytest.mark.parametrize("codename", [
    "crm.change_fielddefinition", "crm.add_fielddefinition", "auth.change_user",
    "auth.change_group", "crm.delete_person",
])
def test_staff_hold_no_settings_or_destructive_permission(codename):
    assert codename not in perms(Group.objects.get(name=STAFF))


def test_sync_roles_is_idempotent_and_keeps_hand_granted_permissions():
    staff = Group.objects.get(name=STAFF)
    extra = Permission.objects.get(codename="delete_marketinglist")
    staff.permissions.add(extra)
    sync_roles(Group, Permission)
    sync_roles(Group, Permission)
    assert Group.objects.filter(name=STAFF).count() == 1
    assert staff.permissions.filter(pk=extra.pk).exists()
