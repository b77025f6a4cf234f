from jobprogress_core.service import main as serve_main

from .app import SERVICE, create_app


def main() -> None:
    serve_main(SERVICE, create_app)


if __name__ == "__main__":
    main()
