from fetalmlops.inference.main import main

main()
