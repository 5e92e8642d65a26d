from mcp_hangar.cli import main

main()
