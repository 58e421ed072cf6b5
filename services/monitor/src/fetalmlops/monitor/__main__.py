from fetalmlops.monitor.main import main

main()
