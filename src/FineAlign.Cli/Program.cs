return await FineAlign.Cli.CliApp.RunProcessAsync(args);
