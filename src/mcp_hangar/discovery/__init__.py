"""Discovery: providers found outside the config file (a folder of provider files, labelled
containers, installed Python packages), reconciled into the registry while hangar runs."""
