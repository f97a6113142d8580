def test_it_serves_the_admin_login(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert b"Ops Portal" in response.content
