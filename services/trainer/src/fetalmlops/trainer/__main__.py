from fetalmlops.trainer.main import main

main()
