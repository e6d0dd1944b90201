from bdh.cli import main

main()
