"""The storefront in headless Chromium (issue 8's "Done when"): recommendations on the home page,
similar products on a product page, a purchase that changes the "because you bought" row, text
search, and the inspector's three stages. Each test saves a screenshot (conftest.SCREENSHOTS)."""

from __future__ import annotations

import re

import pytest

from trainer.data.loaders import load_dataset


@pytest.fixture(scope="module")
def market(built):
    return load_dataset(built.dataset)


def cards(page, row: str):
    return page.locator(f'section[data-row="{row}"] article.card')


def test_home_shows_recommendations_for_a_user(page, screenshot):
    page.goto("/")
    page.keyboard.press("Tab")  # the first stop is the skip link
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    row = page.locator('section[data-row="for-you"]')
    assert row.locator("h2").inner_text() == "Recommended for you"
    assert cards(page, "for-you").count() == 12
    first = cards(page, "for-you").first
    assert first.locator("img").get_attribute("alt") == first.locator("h3").inner_text()
    first.locator("summary").click()  # "Why this?" opens
    assert first.locator("details.why li").first.is_visible()
    for key in ("for-you", "trending", "new"):
        assert cards(page, key).count() > 0, key
    screenshot(page)


def test_product_page_shows_similar_products(page, screenshot):
    page.goto("/")
    title = cards(page, "for-you").first.locator("h3").inner_text()
    cards(page, "for-you").first.locator("a.card-link").click()
    page.wait_for_url(re.compile(r"/product/"))
    assert page.locator("h1").inner_text() == title
    assert cards(page, "similar").count() == 8
    assert page.get_by_role("button", name="Buy").is_enabled()
    screenshot(page)


def test_buying_a_product_changes_the_because_you_bought_row(page, market, screenshot):
    page.goto("/")
    page.get_by_label("Shopping as").select_option("new")
    page.get_by_role("button", name="Switch").click()
    page.wait_for_load_state()
    assert page.locator('section[data-row="because"]').count() == 0
    titles = market.products.set_index("product_id")["title"]
    bought = []
    for product_id in market.products.loc[market.products["in_stock"], "product_id"][:31:30]:
        page.goto(f"/product/{product_id}")
        page.get_by_role("button", name="Buy").click()
        page.wait_for_url(re.compile(rf"/product/{product_id}$"))
        assert "Bought:" in page.locator(".flash").inner_text()
        page.goto("/")
        heading = page.locator('section[data-row="because"] h2').inner_text()
        assert heading == f"Because you bought {titles[product_id]}"
        assert cards(page, "because").count() > 0
        bought.append(heading)
    assert bought[0] != bought[1]
    screenshot(page)


def test_search_finds_a_product_by_a_word_in_its_title(page, market, screenshot):
    title = market.products["title"].iloc[5]
    word = title.split()[0]  # the brand: few products share it
    page.goto("/")
    page.get_by_label("Search products").fill(word)
    page.get_by_label("Search products").press("Enter")
    page.wait_for_url(re.compile(r"/search\?"))
    found = page.locator("article.card h3").all_inner_texts()
    assert title in found
    assert all(word.lower() in t.lower() for t in found[:3])
    screenshot(page)


def test_inspector_shows_three_stages(page, screenshot):
    page.goto("/")
    page.locator('section[data-row="for-you"] a.inspect').click()
    page.wait_for_url(re.compile(r"/inspect"))
    stages = page.locator("section.stage")
    assert stages.count() == 3
    assert [s.get_attribute("data-stage") for s in stages.all()] == [
        "candidates",
        "ranked",
        "reranked",
    ]
    for stage in stages.all():
        assert stage.locator("tbody tr").count() > 0
    assert "retrieve_and_rank" in page.locator("table.latency-table").inner_text()
    screenshot(page)
