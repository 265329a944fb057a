# pytest options for the tokenizer differential tests (registered with CTest in CMakeLists.txt).
import os


def pytest_addoption(parser):
    parser.addoption("--driver", default=os.environ.get("MISTRAL_TOKENIZER_DRIVER"),
                     help="path to the tokenizer_driver executable")
    parser.addoption("--strings", type=int, default=int(os.environ.get("MISTRAL_TOKENIZER_STRINGS", "3000")),
                     help="generated strings per tokenizer")
