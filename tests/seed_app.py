"""A faithful copy of the seed's server, the app this project grew from, kept to test
``crypto-poll`` against: Flask, a background thread that moves the price by up to ±2 %
every 3 s, and its one route answering ``{"price", "timestamp"}``: no ETag, no tick
fields, no symbol; query parameters are ignored.

Two changes, both for running it under test: the port comes from the command line (the
seed used 5000), and the debug reloader is off (it would fork a second process).

    python tests/seed_app.py PORT
"""

import random
import sys
import threading
import time

from flask import Flask, jsonify

app = Flask(__name__)

# Simulated crypto price
crypto_price = 100.0


def update_price():  # type: ignore[no-untyped-def]
    global crypto_price
    while True:
        # Simulate price changes
        change = random.uniform(-2, 2)  # ±2%
        crypto_price *= 1 + change / 100
        time.sleep(3)


@app.route("/crypto-price", methods=["GET"])
def get_crypto_price():  # type: ignore[no-untyped-def]
    return jsonify({"price": round(crypto_price, 2), "timestamp": time.time()})


if __name__ == "__main__":
    threading.Thread(target=update_price, daemon=True).start()
    app.run(port=int(sys.argv[1]) if len(sys.argv) > 1 else 5000)
