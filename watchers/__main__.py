from watchers.cli import main

raise SystemExit(main())
