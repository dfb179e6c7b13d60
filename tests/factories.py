"""factory-boy factories for every model. People are created through the person service, so
tests set state up the way the product does."""

import io

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from campaigns.models import MailboxMessage
from crm import services
from crm.models import FieldDefinition, FieldType, MarketingList, Organisation, Person
from crm.roles import ADMINS, STAFF


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@staff.example")
    is_staff = True
    password = factory.django.Password("correct horse battery staple")

    @factory.post_generation
    def role(self, create, extracted, **kwargs):
        if create and extracted:
            self.groups.add(Group.objects.get(name=extracted))


class StaffUserFactory(UserFactory):
    """A user in the Staff group (works people, no settings)."""

    role = factory.PostGeneration(lambda user, create, extracted, **kw: create and user.groups.add(
        Group.objects.get(name=extracted or STAFF)))


class AdminUserFactory(UserFactory):
    """A user in the Admins group (settings and everything else)."""

    role = factory.PostGeneration(lambda user, create, extracted, **kw: create and user.groups.add(
        Group.objects.get(name=extracted or ADMINS)))


class OrganisationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organisation
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Organisation {n}")
    country = "IT"


class MarketingListFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MarketingList
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"List {n}")


class FieldDefinitionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FieldDefinition
        django_get_or_create = ("key",)

    key = factory.Sequence(lambda n: f"custom_{n}")
    label = factory.LazyAttribute(lambda d: d.key.replace("_", " ").capitalize())
    field_type = FieldType.TEXT


class PersonFactory(factory.Factory):
    """Builds the data dict and creates the person through `crm.services.person_create`."""

    class Meta:
        model = Person

    kind = "lead"
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    email = factory.Sequence(lambda n: f"person{n}@example.org")
    company = factory.Faker("company")
    country = "IT"
    region = "EU"
    stage = "new"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        actor = kwargs.pop("actor", None)
        return services.person_create(data=kwargs, actor=actor, source=services.Source.SYSTEM)

    @classmethod
    def _build(cls, model_class, *args, **kwargs):
        kwargs.pop("actor", None)
        return model_class(**kwargs)


class MailboxMessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MailboxMessage

    from_email = "no-reply@consenso.local"
    to = factory.Sequence(lambda n: f"person{n}@example.org")
    subject = "Hello"
    body_text = "Hello there"


def import_people(text: str, *, user=None, file_name: str = "people.csv", mapping=None):
    """Run a CSV import as staff do — upload, map (by header names unless `mapping`), start —
    and run it inline like the worker; the finished job."""
    from crm import imports

    job = imports.import_job_create(upload=io.BytesIO(text.encode()), user=user,
                                    source=services.Source.STAFF, file_name=file_name)
    imports.import_job_set_mapping(job=job, mapping=mapping)
    imports.import_job_start(job=job)
    return imports.import_job_run(job.pk)
