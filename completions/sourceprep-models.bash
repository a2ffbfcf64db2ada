
_sourceprep_models_completion() {
    local IFS=$'
'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \
                   COMP_CWORD=$COMP_CWORD \
                   _SOURCEPREP_MODELS_COMPLETE=complete_bash $1 ) )
    return 0
}

complete -o default -F _sourceprep_models_completion sourceprep-models

