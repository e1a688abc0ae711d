from watchers.launch import main

raise SystemExit(main())
