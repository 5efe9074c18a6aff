"""The words of the synthetic catalogue: a three-level taxonomy and per-category vocabularies.

Each root category has its own adjectives and a typical price; each second-level category its own
materials and uses; each leaf is a product type (plural slug for the id, singular noun for titles)
and is marked consumable (bought again and again) or durable. Because titles and descriptions are
drawn from these per-category lists, text carries category signal a text model can learn.

Lists are written once here; :mod:`trainer.data.synthetic.catalogue` cycles a list when it needs a
fixed width, so the lists need not have equal lengths.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Leaf:
    slug: str  # id segment and display name, plural ("cutting-boards")
    noun: str  # singular, for titles ("cutting board")
    consumable: bool


@dataclass(frozen=True)
class Sub:
    slug: str
    materials: tuple[str, ...]
    uses: tuple[str, ...]
    leaves: tuple[Leaf, ...]


@dataclass(frozen=True)
class Root:
    slug: str
    price: float  # median price of the root, in the marketplace currency
    adjectives: tuple[str, ...]
    subs: tuple[Sub, ...]


def _leaves(spec: str) -> tuple[Leaf, ...]:
    """Parse 'knives:knife, *detergents:detergent' ('*' marks a consumable)."""
    leaves = []
    for item in spec.split(","):
        slug, noun = item.strip().split(":")
        leaves.append(Leaf(slug.lstrip("*"), noun, slug.startswith("*")))
    return tuple(leaves)


def _words(spec: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in spec.split(",") if w.strip())


TAXONOMY: tuple[Root, ...] = (
    Root(
        "home",
        40.0,
        _words("rustic, minimalist, scandinavian, cosy, modern, vintage, compact, sturdy"),
        (
            Sub(
                "kitchen",
                _words("stainless steel, walnut, cast iron, ceramic, bamboo, enamel"),
                _words("everyday cooking, meal prep, family dinners, baking"),
                _leaves(
                    "knives:knife, pans:pan, kettles:kettle, mugs:mug, cutting-boards:cutting board"
                ),
            ),
            Sub(
                "furniture",
                _words("oak, pine, rattan, velvet, steel, linen"),
                _words("small flats, the living room, home offices, reading corners"),
                _leaves("chairs:chair, tables:table, shelves:shelf, sofas:sofa, desks:desk"),
            ),
            Sub(
                "bedding",
                _words("cotton, linen, wool, down, bamboo fibre, percale"),
                _words("restful sleep, guest rooms, cold nights, summer nights"),
                _leaves(
                    "pillows:pillow, duvets:duvet, sheets:sheet set, blankets:blanket, "
                    "toppers:mattress topper"
                ),
            ),
            Sub(
                "cleaning",
                _words("plant-based, lemon, eucalyptus, microfibre, unscented, lavender"),
                _words("kitchen counters, bathrooms, weekly chores, sensitive skin"),
                _leaves(
                    "*detergents:detergent, *sponges:sponge pack, *wipes:wipes pack, "
                    "*bin-bags:bin bag roll, *dish-soaps:dish soap"
                ),
            ),
        ),
    ),
    Root(
        "fashion",
        50.0,
        _words("classic, slim-fit, oversized, casual, elegant, retro, breathable, tailored"),
        (
            Sub(
                "shoes",
                _words("leather, suede, canvas, mesh, rubber, knit"),
                _words("city walks, running errands, the office, weekend trips"),
                _leaves("sneakers:sneaker, boots:boot, sandals:sandal, loafers:loafer, heels:heel"),
            ),
            Sub(
                "clothing",
                _words("organic cotton, denim, merino, polyester, cashmere, jersey"),
                _words("layering, everyday wear, evenings out, travel"),
                _leaves(
                    "t-shirts:t-shirt, jeans:jeans, jackets:jacket, dresses:dress, sweaters:sweater"
                ),
            ),
            Sub(
                "accessories",
                _words("leather, silk, wool, acetate, titanium, straw"),
                _words("finishing an outfit, gifting, sunny days, winter"),
                _leaves(
                    "belts:belt, scarves:scarf, hats:hat, wallets:wallet, sunglasses:sunglasses"
                ),
            ),
            Sub(
                "bags",
                _words("nylon, leather, canvas, recycled PET, polycarbonate, waxed cotton"),
                _words("commuting, carry-on travel, the gym, school"),
                _leaves(
                    "backpacks:backpack, handbags:handbag, totes:tote, suitcases:suitcase, "
                    "duffels:duffel bag"
                ),
            ),
        ),
    ),
    Root(
        "electronics",
        150.0,
        _words(
            "wireless, fast-charging, high-resolution, portable, smart, "
            "noise-cancelling, ultra-thin, rugged"
        ),
        (
            Sub(
                "phones",
                _words("aluminium, tempered glass, silicone, braided nylon, graphene, TPU"),
                _words("daily use, travel, gaming, photography"),
                _leaves(
                    "smartphones:smartphone, phone-cases:phone case, chargers:charger, "
                    "cables:cable, screen-protectors:screen protector"
                ),
            ),
            Sub(
                "computers",
                _words("aluminium, mechanical, OLED, IPS, ergonomic, low-profile"),
                _words("remote work, gaming, programming, video editing"),
                _leaves(
                    "laptops:laptop, monitors:monitor, keyboards:keyboard, mice:mouse, "
                    "webcams:webcam"
                ),
            ),
            Sub(
                "audio",
                _words("bluetooth, hi-fi, bass-boost, spatial, studio-grade, waterproof"),
                _words("commuting, workouts, home cinema, podcasts"),
                _leaves(
                    "headphones:headphones, earbuds:earbuds, speakers:speaker, "
                    "soundbars:soundbar, microphones:microphone"
                ),
            ),
            Sub(
                "cameras",
                _words("full-frame, weather-sealed, carbon fibre, stabilised, 4K, compact"),
                _words("travel photography, vlogging, wildlife, portraits"),
                _leaves(
                    "mirrorless:mirrorless camera, lenses:lens, tripods:tripod, "
                    "action-cams:action camera, memory-cards:memory card"
                ),
            ),
        ),
    ),
    Root(
        "beauty",
        20.0,
        _words(
            "hydrating, fragrance-free, vegan, dermatologist-tested, glowing, "
            "long-lasting, gentle, matte"
        ),
        (
            Sub(
                "skincare",
                _words("hyaluronic acid, vitamin C, niacinamide, aloe, shea butter, retinol"),
                _words("dry skin, morning routines, sensitive skin, night care"),
                _leaves(
                    "*moisturisers:moisturiser, *serums:serum, *cleansers:cleanser, "
                    "*sunscreens:sunscreen, *face-masks:face mask"
                ),
            ),
            Sub(
                "makeup",
                _words("mineral, satin, cream, powder, gel, waterproof formula"),
                _words("everyday looks, evenings out, natural looks, photo shoots"),
                _leaves(
                    "*lipsticks:lipstick, *mascaras:mascara, *foundations:foundation, "
                    "*eyeliners:eyeliner, *blushes:blush"
                ),
            ),
            Sub(
                "haircare",
                _words("argan oil, keratin, coconut, tea tree, biotin, ceramic"),
                _words("curly hair, fine hair, colour-treated hair, daily styling"),
                _leaves(
                    "*shampoos:shampoo, *conditioners:conditioner, *hair-oils:hair oil, "
                    "hair-dryers:hair dryer, straighteners:straightener"
                ),
            ),
            Sub(
                "fragrance",
                _words("citrus, amber, vanilla, sandalwood, rose, vetiver"),
                _words("daytime, evenings, gifting, summer"),
                _leaves(
                    "*perfumes:perfume, *colognes:cologne, *body-mists:body mist, "
                    "candles:scented candle, diffusers:diffuser"
                ),
            ),
        ),
    ),
    Root(
        "grocery",
        6.0,
        _words(
            "organic, artisan, fair-trade, wholegrain, family-size, sugar-free, italian, roasted"
        ),
        (
            Sub(
                "pantry",
                _words("durum wheat, basmati, extra virgin, smoked, sea salt, stone-ground"),
                _words("weeknight dinners, batch cooking, baking, quick lunches"),
                _leaves(
                    "*pasta:pasta, *rice:rice, *olive-oils:olive oil, *spices:spice mix, "
                    "*cereals:cereal"
                ),
            ),
            Sub(
                "drinks",
                _words("single-origin, green, cold-pressed, mineral, dark roast, oat"),
                _words("mornings, the office, hot afternoons, cosy evenings"),
                _leaves(
                    "*coffee:coffee, *tea:tea, *juices:juice, *sparkling-water:sparkling water, "
                    "*cocoa:cocoa"
                ),
            ),
            Sub(
                "snacks",
                _words("salted, dark chocolate, almond, honey, chilli, oat"),
                _words("movie nights, lunch boxes, hiking, sharing"),
                _leaves(
                    "*crisps:crisps, *cookies:cookie pack, *nuts:nut mix, "
                    "*chocolate:chocolate bar, *granola-bars:granola bar"
                ),
            ),
            Sub(
                "fresh",
                _words("aged, sourdough, greek, seasonal, free-range, farmhouse"),
                _words("breakfast, picnics, family meals, healthy snacks"),
                _leaves(
                    "*cheese:cheese, *bread:bread, *yoghurt:yoghurt, *fruit:fruit box, *eggs:eggs"
                ),
            ),
        ),
    ),
    Root(
        "sports",
        45.0,
        _words(
            "lightweight, pro, durable, adjustable, anti-slip, foldable, "
            "high-performance, ventilated"
        ),
        (
            Sub(
                "fitness",
                _words("neoprene, natural rubber, steel, TPE, foam, cast iron"),
                _words("home workouts, strength training, yoga, warm-ups"),
                _leaves(
                    "dumbbells:dumbbell set, yoga-mats:yoga mat, resistance-bands:resistance band, "
                    "kettlebells:kettlebell, jump-ropes:jump rope"
                ),
            ),
            Sub(
                "outdoor",
                _words("ripstop nylon, down, aluminium, gore-tex, fleece, titanium"),
                _words("camping, long hikes, cold weather, festivals"),
                _leaves(
                    "tents:tent, sleeping-bags:sleeping bag, hiking-poles:hiking pole, "
                    "headlamps:headlamp, water-bottles:water bottle"
                ),
            ),
            Sub(
                "cycling",
                _words("carbon, aluminium, reflective, gel, chromoly, LED"),
                _words("commuting, road rides, mountain trails, night rides"),
                _leaves(
                    "bikes:bike, helmets:helmet, bike-lights:bike light, bike-locks:bike lock, "
                    "cycling-gloves:cycling glove"
                ),
            ),
            Sub(
                "nutrition",
                _words("whey, plant protein, caffeine-free, electrolyte, vanilla, berry"),
                _words("recovery, endurance, pre-workout, muscle gain"),
                _leaves(
                    "*protein-powders:protein powder, *energy-gels:energy gel, "
                    "*electrolytes:electrolyte tablets, *protein-bars:protein bar, "
                    "*vitamins:multivitamin"
                ),
            ),
        ),
    ),
    Root(
        "toys",
        25.0,
        _words(
            "educational, colourful, award-winning, classic, creative, "
            "interactive, family, montessori"
        ),
        (
            Sub(
                "building",
                _words("wooden, magnetic, plastic, cardboard, metal, recycled"),
                _words("ages 3 and up, rainy days, STEM learning, family time"),
                _leaves(
                    "blocks:block set, model-kits:model kit, marble-runs:marble run, "
                    "magnetic-tiles:magnetic tile set, construction-sets:construction set"
                ),
            ),
            Sub(
                "games",
                _words("strategy, cooperative, party, travel-size, deluxe, wooden"),
                _words("game nights, two players, large groups, long journeys"),
                _leaves(
                    "board-games:board game, puzzles:puzzle, card-games:card game, "
                    "dice-games:dice game, trivia-games:trivia game"
                ),
            ),
            Sub(
                "baby",
                _words("organic cotton, silicone, beech wood, plush, BPA-free, soft fabric"),
                _words("newborns, teething, tummy time, bedtime"),
                _leaves(
                    "rattles:rattle, teethers:teether, plush-toys:plush toy, "
                    "stacking-cups:stacking cups, play-mats:play mat"
                ),
            ),
            Sub(
                "outdoor-play",
                _words("waterproof, inflatable, aluminium, nylon, foam, recycled plastic"),
                _words("the garden, the beach, summer holidays, the park"),
                _leaves(
                    "kites:kite, water-guns:water gun, sand-toys:sand toy set, "
                    "scooters:scooter, balls:ball"
                ),
            ),
        ),
    ),
    Root(
        "pets",
        20.0,
        _words(
            "grain-free, natural, chew-resistant, washable, premium, "
            "vet-approved, odour-control, orthopaedic"
        ),
        (
            Sub(
                "dog",
                _words("chicken, salmon, nylon, memory foam, rope, lamb"),
                _words("puppies, senior dogs, long walks, training"),
                _leaves(
                    "*dog-food:dog food, *dog-treats:dog treat, leashes:leash, "
                    "dog-beds:dog bed, chew-toys:chew toy"
                ),
            ),
            Sub(
                "cat",
                _words("tuna, clumping clay, sisal, catnip, fleece, turkey"),
                _words("indoor cats, kittens, playtime, fussy eaters"),
                _leaves(
                    "*cat-food:cat food, *cat-litter:cat litter, scratching-posts:scratching post, "
                    "cat-toys:cat toy, cat-beds:cat bed"
                ),
            ),
            Sub(
                "aquarium",
                _words("tropical, freshwater, glass, LED, coral, activated carbon"),
                _words("beginners, planted tanks, goldfish, reef tanks"),
                _leaves(
                    "*fish-food:fish food, filters:filter, heaters:aquarium heater, "
                    "*gravel:gravel, tanks:tank"
                ),
            ),
            Sub(
                "small-pets",
                _words("timothy hay, pine, wire, ceramic, paper bedding, apple wood"),
                _words("rabbits, hamsters, guinea pigs, birds"),
                _leaves(
                    "*hay:hay, cages:cage, *bedding:bedding, *pellets:pellet food, hideouts:hideout"
                ),
            ),
        ),
    ),
)

COLOURS: tuple[str, ...] = _words(
    "black, white, grey, navy, red, green, beige, blue, pink, yellow, brown, olive"
)
REGIONS: tuple[str, ...] = _words("north, south, east, west, central, coast, mountains, islands")
# Syllables for seller and brand names; deterministic combinations give plausible made-up names.
SYLLABLES: tuple[str, ...] = _words(
    "nor, vik, kal, sto, ma, ren, lu, bra, zen, tor, ali, ve, qui, sol, dar, mo, ka, fin, "
    "ro, ly, sa, tek, ori, pa, gen, ux, bel, ia, no, va, cor, lin"
)
SELLER_SUFFIXES: tuple[str, ...] = _words("Goods, Store, Trading, Co, Market, Supply, Shop, House")
