from fetalmlops.anonymizer.main import main

main()
