from fetalmlops.ingest.main import main

main()
