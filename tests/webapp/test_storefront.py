"""The storefront's pages through Flask's test client, against the embedded engine serving the
tiny marketplace (fixtures in tests/webapp/conftest.py): pages, forms with and without CSRF
tokens, escaping of user text, 400 pages naming the parameter."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.webapp.conftest import close_app, make_app
from trainer.data.loaders import load_dataset
from webapp.storefront.catalog import Catalog

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def market(built):
    return load_dataset(built.dataset)


@pytest.fixture(scope="module")
def catalog(built) -> Catalog:
    return Catalog.from_dataset(built.dataset)


@pytest.fixture
def shop(engine, built, tmp_path, catalog) -> Iterator[Flask]:
    app = make_app(engine, built, tmp_path, CATALOG=catalog, SECRET_KEY="test-key")
    yield app
    close_app(app)


@pytest.fixture
def browser(shop: Flask) -> FlaskClient:
    return shop.test_client()


def token(client: FlaskClient, path: str = "/category/") -> str:
    match = TOKEN.search(client.get(path).get_data(as_text=True))
    assert match, "no CSRF token in the page"
    return match.group(1)


def rows_of(html: str) -> list[str]:
    return re.findall(r'<section class="row"[^>]*data-row="([^"]+)"', html)


def become_new_shopper(client: FlaskClient) -> None:
    response = client.post("/shopper", data={"shopper": "new", "csrf_token": token(client)})
    assert response.status_code == 302


def buy(client: FlaskClient, product_id: str, event_type: str = "purchase"):
    data = {"product_id": product_id, "event_type": event_type, "csrf_token": token(client)}
    return client.post("/events", data={**data, "next": f"/product/{product_id}"})


def in_stock(market, n: int = 1) -> list[str]:
    return market.products.loc[market.products["in_stock"], "product_id"].head(n).tolist()


def test_demo_shoppers_have_different_tastes(catalog):
    users = catalog.demo_users
    assert len(users) >= 3
    assert len({u.tastes[0] for u in users}) == len(users)


def test_home_shows_four_rows_for_a_demo_shopper(browser, catalog):
    response = browser.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert catalog.demo_users[0].label in html
    rows = rows_of(html)
    assert rows[0] == "for-you" and rows[-2:] == ["trending", "new"]
    assert "Recommended for you" in html  # personalised, not cold start
    assert html.count('class="card"') >= 3 * 12
    assert "Why this?" in html and "Found because it is" in html
    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert not browser.application.debug


def test_new_shopper_gets_cold_start_then_a_because_row(browser, market):
    become_new_shopper(browser)
    html = browser.get("/").get_data(as_text=True)
    assert "Popular right now" in html and "because" not in rows_of(html)
    product_id = in_stock(market)[0]
    response = buy(browser, product_id)
    assert response.status_code == 302 and response.headers["Location"] == f"/product/{product_id}"
    title = market.products.set_index("product_id").loc[product_id, "title"]
    html = browser.get("/").get_data(as_text=True)
    assert "because" in rows_of(html)
    assert f"Because you bought {title}" in html
    events = browser.application.config["EVENT_STORE"]
    with browser.session_transaction() as session:
        user_id = session["user_id"]
    assert [e["event_type"] for e in events.events(user_id)] == ["purchase"]


def test_buying_another_product_changes_the_because_row(browser, market):
    first, second = in_stock(market, 40)[::39]
    become_new_shopper(browser)
    buy(browser, first)
    titles = market.products.set_index("product_id")["title"]
    assert f"Because you bought {titles[first]}" in browser.get("/").get_data(as_text=True)
    buy(browser, second)
    html = browser.get("/").get_data(as_text=True)
    assert f"Because you bought {titles[second]}" in html
    assert f"Because you bought {titles[first]}" not in html


def test_forms_without_a_csrf_token_are_refused(browser, market):
    product_id = in_stock(market)[0]
    response = browser.post("/events", data={"product_id": product_id, "event_type": "purchase"})
    assert response.status_code == 400
    assert "The CSRF token is missing" in response.get_data(as_text=True)
    response = browser.post(
        "/shopper", data={"shopper": "new", "csrf_token": "forged"}, follow_redirects=False
    )
    assert response.status_code == 400
    assert browser.application.config["EVENT_STORE"].events(_current_user(browser)) == []


def _current_user(client: FlaskClient) -> str:
    client.get("/category/")
    with client.session_transaction() as session:
        return session["user_id"]


def test_json_api_events_need_no_csrf_token(browser, market):
    product_id = in_stock(market)[0]
    response = browser.post(
        "/api/events",
        json={"user_id": "api-client", "product_id": product_id, "event_type": "cart"},
    )
    assert response.status_code == 201 and response.get_json()["history_updated"]


def test_product_page_shows_similar_products_and_the_seller(browser, market, catalog):
    product = market.products.loc[market.products["in_stock"]].iloc[0]
    html = browser.get(f"/product/{product.product_id}").get_data(as_text=True)
    similar = html.split('data-row="similar"', 1)[1].split("</section>", 1)[0]
    assert similar.count('class="card"') == 8
    assert product.title in html and catalog.seller_name(product.seller_id) in html
    assert 'aria-label="Breadcrumb"' in html
    for name in ("Favourite", "Add to cart", "Buy"):
        assert f">{name}</button>" in html
    assert 'data-row="together"' in html


def test_category_seller_and_search_pages(browser, market, catalog):
    leaf = market.products.iloc[0]
    html = browser.get(f"/category/{leaf.category_id}").get_data(as_text=True)
    for ancestor in catalog.path(leaf.category_id):
        assert catalog.category_name(ancestor) in html
    assert leaf.title in html or "products, most popular first" in html
    html = browser.get(f"/seller/{leaf.seller_id}").get_data(as_text=True)
    assert catalog.seller_name(leaf.seller_id) in html and 'class="card"' in html
    word = leaf.title.split()[-2]  # the leaf noun, e.g. "pan"
    for mode in ("text", "hybrid"):
        html = browser.get(f"/search?q={word}&mode={mode}").get_data(as_text=True)
        titles = re.findall(r'<h3 class="card-title">([^<]+)</h3>', html)
        assert titles and word.lower() in titles[0].lower()


def test_user_text_is_escaped(browser):
    attack = '<script>alert("x")</script>'
    response = browser.get("/search", query_string={"q": attack})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert attack not in html and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    response = browser.get("/product/%3Cb%3Ex")
    assert response.status_code == 400 and "<b>x" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/search?q=", "q"),
        ("/search?q=pan&mode=magic", "mode"),
        ("/search?q=pan&page=0", "page"),
        ("/category/home?page=x", "page"),
        ("/inspect?row=everything", "row"),
        ("/inspect?k=500", "k"),
        ("/seller/bad%22id", "seller_id"),
    ],
)
def test_bad_parameters_are_400_pages_naming_them(browser, path, parameter):
    response = browser.get(path)
    assert response.status_code == 400
    assert f"{parameter}: " in response.get_data(as_text=True)


def test_bad_forms_are_400(browser):
    csrf = token(browser)
    response = browser.post("/shopper", data={"shopper": "u-nobody", "csrf_token": csrf})
    assert response.status_code == 400 and "shopper: " in response.get_data(as_text=True)
    response = browser.post(
        "/events", data={"product_id": "p000", "event_type": "impression", "csrf_token": csrf}
    )
    assert response.status_code == 400 and "event_type: " in response.get_data(as_text=True)
    response = browser.post(
        "/events", data={"product_id": "no-such", "event_type": "cart", "csrf_token": csrf}
    )
    assert response.status_code == 404


def test_redirects_stay_on_the_site(browser, market):
    data = {
        "product_id": in_stock(market)[0],
        "event_type": "favorite",
        "csrf_token": token(browser),
        "next": "//evil.example/",
    }
    response = browser.post("/events", data=data)
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_inspector_shows_three_stages_with_scores(browser):
    html = browser.get("/inspect?row=for-you&show=10").get_data(as_text=True)
    stages = re.findall(r'data-stage="([^"]+)"', html)
    assert stages == ["candidates", "ranked", "reranked"]
    assert "retrieve_and_rank" in html and "Strategy: <strong>personalized</strong>" in html
    for name in ("trending", "new", "because"):
        page = browser.get(f"/inspect?row={name}")
        assert page.status_code == 200 and 'data-stage="result"' in page.get_data(as_text=True)


def test_product_images_are_local_svg(browser):
    response = browser.get("/images/product/p000.svg?c=home/kitchen/pans")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert response.get_data(as_text=True).startswith("<svg")
    assert browser.get("/images/product/p000.svg?c=%3Cx%3E").status_code == 400


def test_secret_key_from_the_environment_else_random_with_a_warning(
    engine, built, tmp_path, catalog, monkeypatch, caplog
):
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    app = make_app(engine, built, tmp_path / "a", CATALOG=catalog)
    assert app.secret_key == "from-the-environment" and not app.debug
    close_app(app)
    monkeypatch.delenv("SECRET_KEY")
    with caplog.at_level("WARNING", logger="webapp"):
        app = make_app(engine, built, tmp_path / "b", CATALOG=catalog)
    assert "SECRET_KEY is not set" in caplog.text
    assert len(app.secret_key) == 64 and app.secret_key != "from-the-environment"
    close_app(app)
