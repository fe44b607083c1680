from convision.cli import main

raise SystemExit(main())
