import pytest


@pytest.mark.django_db
@pytest.mark.parametrize(("language", "expected"), [("it", "Nome utente"), ("en", "Username")])
def test_staff_ui_speaks_the_browsers_language(client, language, expected):
    response = client.get("/admin/login/", HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 200
    assert expected in response.content.decode()
    assert response.headers["Content-Language"] == language
