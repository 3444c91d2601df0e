return await FineAlign.Cli.CliApp.RunAsync(args);
