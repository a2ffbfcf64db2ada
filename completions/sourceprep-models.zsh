
#compdef sourceprep-models

_sourceprep_models_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _SOURCEPREP_MODELS_COMPLETE=complete_zsh sourceprep-models)
}

compdef _sourceprep_models_completion sourceprep-models

