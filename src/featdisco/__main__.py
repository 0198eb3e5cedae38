from featdisco.cli import main

main()
