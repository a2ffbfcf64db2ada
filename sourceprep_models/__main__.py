"""`python -m sourceprep_models` runs the same entry point as the `sourceprep-models` command."""

from sourceprep_models.cli.app import main

if __name__ == "__main__":
    main()
