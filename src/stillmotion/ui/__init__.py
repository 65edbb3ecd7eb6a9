"""The local web app (``stillmotion ui``): draw arrows and a mask on a photo, preview, animate, download.

``server.create_app`` builds the FastAPI app; ``static/`` holds the one page it serves (plain HTML,
JS and CSS, nothing from the internet). Only ``server`` imports FastAPI, so nothing else in the
package pays for it.
"""
