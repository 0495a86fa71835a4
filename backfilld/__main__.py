from backfilld.cli import main

main()
