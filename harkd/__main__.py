from harkd.cli import main

main()
